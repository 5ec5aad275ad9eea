use std::time::{Duration, SystemTime};

use rcgen::{CustomExtension, IsCa, KeyUsagePurpose, SanType};
use x509_parser::extensions::GeneralName;

use super::*;
use crate::tls::testing::{leaf_params, TestCa};

/// What x509-parser reads from the same DER.
fn reference(der: &[u8]) -> LeafFields {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    let uri_sans = cert
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    LeafFields {
        uri_sans,
        is_ca: cert
            .basic_constraints()
            .unwrap()
            .is_some_and(|constraints| constraints.value.ca),
        may_sign: cert
            .key_usage()
            .unwrap()
            .is_none_or(|usage| usage.value.digital_signature()),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
    }
}

fn sample_certificates(ca: &TestCa) -> Vec<(&'static str, Vec<u8>)> {
    let mut certificates = vec![("ca", ca.cert.to_vec())];
    let workload = leaf_params("spiffe://cluster.local/ns/shop/sa/web");
    certificates.push(("workload", ca.leaf(&workload).0[0].to_vec()));

    let mut many = leaf_params("spiffe://cluster.local/ns/a/sa/b");
    many.subject_alt_names = vec![
        SanType::DnsName("web.shop.svc".try_into().unwrap()),
        SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().unwrap()),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
        SanType::Rfc822Name("ops@example.com".try_into().unwrap()),
        SanType::URI("https://example.com/x".try_into().unwrap()),
    ];
    certificates.push(("many names", ca.leaf(&many).0[0].to_vec()));

    let mut dns_only = leaf_params("unused");
    dns_only.subject_alt_names = vec![SanType::DnsName("web.shop.svc".try_into().unwrap())];
    certificates.push(("dns only", ca.leaf(&dns_only).0[0].to_vec()));

    let mut bare = rcgen::CertificateParams::default();
    bare.subject_alt_names.clear();
    certificates.push(("no extensions asked", ca.leaf(&bare).0[0].to_vec()));

    let mut ca_leaf = leaf_params("spiffe://cluster.local/ns/a/sa/b");
    ca_leaf.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    certificates.push(("ca leaf", ca.leaf(&ca_leaf).0[0].to_vec()));

    let mut no_signing = leaf_params("spiffe://cluster.local/ns/a/sa/b");
    no_signing.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    certificates.push(("no digitalSignature", ca.leaf(&no_signing).0[0].to_vec()));

    // Dates from 2050 on are GeneralizedTime; before, UTCTime.
    let mut far = leaf_params("spiffe://cluster.local/ns/a/sa/b");
    far.not_before = rcgen::date_time_ymd(1969, 12, 31);
    far.not_after = rcgen::date_time_ymd(2060, 2, 29);
    certificates.push(("generalized time", ca.leaf(&far).0[0].to_vec()));
    certificates
}

#[test]
fn reads_what_x509_parser_reads() {
    let ca = TestCa::new("test root");
    for (name, der) in sample_certificates(&ca) {
        assert_eq!(parse_leaf(&der), Ok(reference(&der)), "{name}");
    }
}

#[test]
fn reads_a_workload_leaf() {
    let ca = TestCa::new("test root");
    let params = leaf_params("spiffe://cluster.local/ns/shop/sa/web");
    let not_after: SystemTime = params.not_after.into();
    let (chain, _) = ca.leaf(&params);
    let fields = parse_leaf(&chain[0]).unwrap();
    assert_eq!(fields.uri_sans, ["spiffe://cluster.local/ns/shop/sa/web"]);
    assert!(!fields.is_ca);
    assert!(fields.may_sign);
    let error = fields
        .not_after()
        .duration_since(not_after)
        .unwrap_or_else(|e| e.duration());
    assert!(error < Duration::from_secs(1), "{error:?}");
    assert!(parse_leaf(&ca.cert).unwrap().is_ca);
}

#[test]
fn refuses_a_duplicate_extension() {
    let ca = TestCa::new("test root");
    let mut params = leaf_params("spiffe://cluster.local/ns/a/sa/b");
    // A second subjectAltName: SEQUENCE { [6] "spiffe://cluster.local/ns/x/sa/y" }.
    let uri = b"spiffe://cluster.local/ns/x/sa/y";
    let mut content = vec![0x30, uri.len() as u8 + 2, 0x86, uri.len() as u8];
    content.extend_from_slice(uri);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(&[2, 5, 29, 17], content));
    let (chain, _) = ca.leaf(&params);
    assert_eq!(
        parse_leaf(&chain[0]),
        Err(SanError::DuplicateExtension("subjectAltName"))
    );
}

#[test]
fn refuses_every_truncation_and_trailing_bytes() {
    let ca = TestCa::new("test root");
    let (chain, _) = ca.leaf(&leaf_params("spiffe://cluster.local/ns/a/sa/b"));
    let der = chain[0].to_vec();
    for end in 0..der.len() {
        assert!(parse_leaf(&der[..end]).is_err(), "prefix of {end} bytes");
    }
    let mut longer = der.clone();
    longer.push(0);
    assert!(parse_leaf(&longer).is_err());
    assert!(parse_leaf(&vec![0x30; MAX_CERTIFICATE_BYTES + 1]) == Err(SanError::TooLarge));
}

#[test]
fn never_panics_on_corrupted_bytes() {
    let ca = TestCa::new("test root");
    for (_, der) in sample_certificates(&ca) {
        for i in 0..der.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut corrupted = der.clone();
                corrupted[i] ^= flip;
                let _ = parse_leaf(&corrupted);
            }
        }
    }
}

#[test]
fn lengths_must_be_minimal_and_definite() {
    // SEQUENCE { } in various encodings of the length 0.
    let cases: [(&[u8], bool); 5] = [
        (&[0x30, 0x00], true),
        (&[0x30, 0x80, 0x00, 0x00], false), // indefinite (BER)
        (&[0x30, 0x81, 0x00], false),       // long form for a short length
        (&[0x30, 0x82, 0x00, 0x00], false), // leading zero
        (&[0x30, 0x85, 0, 0, 0, 0, 0], false),
    ];
    for (bytes, ok) in cases {
        let mut reader = Reader::new(bytes);
        assert_eq!(reader.any("test").is_ok(), ok, "{bytes:02x?}");
    }
    let mut long = vec![0x04, 0x81, 0x80];
    long.extend([0u8; 0x80]);
    assert_eq!(Reader::new(&long).any("test").unwrap().1.len(), 0x80);
    // High tag numbers never occur in a certificate.
    assert!(Reader::new(&[0x1f, 0x81, 0x00]).any("test").is_err());
}

#[test]
fn times_convert_to_unix_seconds() {
    let cases: [(u8, &[u8], Option<i64>); 9] = [
        (UTC_TIME, b"700101000000Z", Some(0)),
        (UTC_TIME, b"491231235959Z", Some(2_524_607_999)),
        (UTC_TIME, b"500101000000Z", Some(-631_152_000)),
        (GENERALIZED_TIME, b"20240229120000Z", Some(1_709_208_000)),
        (GENERALIZED_TIME, b"20230229120000Z", None), // not a leap year
        (GENERALIZED_TIME, b"21000229000000Z", None), // nor is 2100
        (UTC_TIME, b"700101000000+0000", None),
        (UTC_TIME, b"7001010000Z", None), // seconds are required
        (GENERALIZED_TIME, b"700101000000Z", None),
    ];
    for (tag, text, expected) in cases {
        let mut der = vec![tag, text.len() as u8];
        der.extend_from_slice(text);
        let read = read_time(&mut Reader::new(&der)).ok();
        assert_eq!(read, expected, "{}", String::from_utf8_lossy(text));
    }
}
