//! Reads what the mesh needs from a leaf certificate's DER: its URI SANs (where a SPIFFE ID
//! lives), whether it claims to be a CA, whether its key may sign, and its validity period.
//! Called by the verifiers on every handshake ([`super::verify`]) and on every certificate the
//! control plane issues ([`super::identity`]).
//!
//! A small, strict DER walker rather than a full X.509 parser: definite minimal lengths,
//! single-byte tags, no trailing bytes, no duplicate extensions, at most
//! [`MAX_CERTIFICATE_BYTES`]. It never recurses beyond the fixed shape of a certificate, so
//! its cost is linear in the input. Signatures and the chain are webpki's business; this only
//! reads fields.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Larger inputs are refused unread: mesh leaves are well under 2 KiB.
pub const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

/// What the mesh reads from a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafFields {
    /// Every `uniformResourceIdentifier` in the subject-alternative-name extension, in order.
    /// A workload certificate has exactly one: its SPIFFE ID.
    pub uri_sans: Vec<String>,
    /// BasicConstraints says `cA: TRUE`: such a certificate must never serve as a leaf.
    pub is_ca: bool,
    /// KeyUsage is absent or has `digitalSignature`: TLS 1.3 needs the key to sign.
    pub may_sign: bool,
    /// `notBefore` and `notAfter`, seconds since the Unix epoch (renewal is scheduled from
    /// the lifetime, and expiry is a metric).
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl LeafFields {
    pub fn not_before(&self) -> SystemTime {
        system_time(self.not_before_unix)
    }

    pub fn not_after(&self) -> SystemTime {
        system_time(self.not_after_unix)
    }
}

/// Seconds since the epoch as a `SystemTime` (before 1970 too).
fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Why the bytes are not a certificate this walker accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SanError {
    #[error("certificate larger than {MAX_CERTIFICATE_BYTES} bytes")]
    TooLarge,
    #[error("malformed DER in {0}")]
    Der(&'static str),
    #[error("extension {0} appears twice")]
    DuplicateExtension(&'static str),
    #[error("URI SAN is not ASCII")]
    NonAsciiUri,
}

// Universal tags.
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQUENCE: u8 = 0x30;
// Context-specific tags in TBSCertificate.
const VERSION: u8 = 0xa0;
const ISSUER_UNIQUE_ID: u8 = 0x81;
const SUBJECT_UNIQUE_ID: u8 = 0x82;
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `uniformResourceIdentifier [6] IMPLICIT IA5String`.
const URI_NAME: u8 = 0x86;

/// The extensions read, by OID content bytes (id-ce 2.5.29.x).
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];

/// Parses a leaf certificate's DER.
pub fn parse_leaf(der: &[u8]) -> Result<LeafFields, SanError> {
    if der.len() > MAX_CERTIFICATE_BYTES {
        return Err(SanError::TooLarge);
    }
    let mut outer = Reader::new(der);
    let certificate = outer.expect(SEQUENCE, "certificate")?;
    outer.finish("certificate")?;

    let mut certificate = Reader::new(certificate);
    let tbs = certificate.expect(SEQUENCE, "tbsCertificate")?;
    certificate.expect(SEQUENCE, "signatureAlgorithm")?;
    certificate.expect(BIT_STRING, "signatureValue")?;
    certificate.finish("certificate")?;

    let mut tbs = Reader::new(tbs);
    if tbs.peek() == Some(VERSION) {
        let mut version = Reader::new(tbs.expect(VERSION, "version")?);
        version.expect(INTEGER, "version")?;
        version.finish("version")?;
    }
    tbs.expect(INTEGER, "serialNumber")?;
    tbs.expect(SEQUENCE, "signature")?;
    tbs.expect(SEQUENCE, "issuer")?;
    let mut validity = Reader::new(tbs.expect(SEQUENCE, "validity")?);
    let not_before_unix = read_time(&mut validity)?;
    let not_after_unix = read_time(&mut validity)?;
    validity.finish("validity")?;
    tbs.expect(SEQUENCE, "subject")?;
    tbs.expect(SEQUENCE, "subjectPublicKeyInfo")?;
    for tag in [ISSUER_UNIQUE_ID, SUBJECT_UNIQUE_ID] {
        if tbs.peek() == Some(tag) {
            tbs.expect(tag, "uniqueIdentifier")?;
        }
    }
    let mut fields = LeafFields {
        uri_sans: Vec::new(),
        is_ca: false,
        may_sign: true,
        not_before_unix,
        not_after_unix,
    };
    if tbs.peek() == Some(EXTENSIONS) {
        let mut wrapper = Reader::new(tbs.expect(EXTENSIONS, "extensions")?);
        let extensions = wrapper.expect(SEQUENCE, "extensions")?;
        wrapper.finish("extensions")?;
        read_extensions(extensions, &mut fields)?;
    }
    tbs.finish("tbsCertificate")?;
    Ok(fields)
}

fn read_extensions(extensions: &[u8], fields: &mut LeafFields) -> Result<(), SanError> {
    let mut extensions = Reader::new(extensions);
    if extensions.at_end() {
        return Err(SanError::Der("extensions: empty"));
    }
    let (mut seen_san, mut seen_basic, mut seen_usage) = (false, false, false);
    let mut seen_other: Vec<&[u8]> = Vec::new();
    while !extensions.at_end() {
        let mut extension = Reader::new(extensions.expect(SEQUENCE, "extension")?);
        let oid = extension.expect(OID, "extension id")?;
        if extension.peek() == Some(BOOLEAN) {
            read_boolean(&mut extension, "extension criticality")?;
        }
        let value = extension.expect(OCTET_STRING, "extension value")?;
        extension.finish("extension")?;
        let seen = match oid {
            SUBJECT_ALT_NAME => &mut seen_san,
            BASIC_CONSTRAINTS => &mut seen_basic,
            KEY_USAGE => &mut seen_usage,
            other => {
                if seen_other.contains(&other) {
                    return Err(SanError::DuplicateExtension("other"));
                }
                seen_other.push(other);
                continue;
            }
        };
        if *seen {
            return Err(SanError::DuplicateExtension(extension_name(oid)));
        }
        *seen = true;
        match oid {
            SUBJECT_ALT_NAME => fields.uri_sans = read_uri_sans(value)?,
            BASIC_CONSTRAINTS => fields.is_ca = read_basic_constraints(value)?,
            _ => fields.may_sign = read_key_usage(value)?,
        }
    }
    Ok(())
}

fn extension_name(oid: &[u8]) -> &'static str {
    match oid {
        SUBJECT_ALT_NAME => "subjectAltName",
        BASIC_CONSTRAINTS => "basicConstraints",
        _ => "keyUsage",
    }
}

/// `GeneralNames ::= SEQUENCE SIZE (1..MAX) OF GeneralName`; keeps the URIs.
fn read_uri_sans(value: &[u8]) -> Result<Vec<String>, SanError> {
    let mut outer = Reader::new(value);
    let names = outer.expect(SEQUENCE, "subjectAltName")?;
    outer.finish("subjectAltName")?;
    let mut names = Reader::new(names);
    if names.at_end() {
        return Err(SanError::Der("subjectAltName: empty"));
    }
    let mut uris = Vec::new();
    while !names.at_end() {
        let (tag, name) = names.any("subjectAltName entry")?;
        // Every GeneralName is context-specific ([0] to [8]).
        if tag & 0xc0 != 0x80 || tag & 0x1f > 8 {
            return Err(SanError::Der("subjectAltName entry"));
        }
        if tag == URI_NAME {
            if !name.is_ascii() {
                return Err(SanError::NonAsciiUri);
            }
            let uri = std::str::from_utf8(name).map_err(|_| SanError::NonAsciiUri)?;
            uris.push(uri.to_string());
        }
    }
    Ok(uris)
}

/// `BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLenConstraint INTEGER OPTIONAL }`.
fn read_basic_constraints(value: &[u8]) -> Result<bool, SanError> {
    let mut outer = Reader::new(value);
    let constraints = outer.expect(SEQUENCE, "basicConstraints")?;
    outer.finish("basicConstraints")?;
    let mut constraints = Reader::new(constraints);
    let is_ca = match constraints.peek() {
        Some(BOOLEAN) => read_boolean(&mut constraints, "basicConstraints cA")?,
        _ => false,
    };
    if constraints.peek() == Some(INTEGER) {
        constraints.expect(INTEGER, "pathLenConstraint")?;
    }
    constraints.finish("basicConstraints")?;
    Ok(is_ca)
}

/// `KeyUsage ::= BIT STRING`; `digitalSignature` is bit 0, the first content byte's top bit.
fn read_key_usage(value: &[u8]) -> Result<bool, SanError> {
    let mut outer = Reader::new(value);
    let bits = outer.expect(BIT_STRING, "keyUsage")?;
    outer.finish("keyUsage")?;
    match bits {
        [unused, first, ..] if *unused < 8 => Ok(first & 0x80 != 0),
        [0] => Ok(false),
        _ => Err(SanError::Der("keyUsage")),
    }
}

fn read_boolean(reader: &mut Reader<'_>, what: &'static str) -> Result<bool, SanError> {
    match reader.expect(BOOLEAN, what)? {
        [0x00] => Ok(false),
        [0xff] => Ok(true),
        _ => Err(SanError::Der(what)),
    }
}

/// `Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime }`, both `Z`-terminated
/// with seconds as RFC 5280 requires.
fn read_time(reader: &mut Reader<'_>) -> Result<i64, SanError> {
    const WHAT: &str = "validity time";
    let (tag, text) = reader.any(WHAT)?;
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(&text[..2]).ok_or(SanError::Der(WHAT))?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4]).ok_or(SanError::Der(WHAT))?, &text[4..]),
        _ => return Err(SanError::Der(WHAT)),
    };
    if rest[10] != b'Z' {
        return Err(SanError::Der(WHAT));
    }
    let field = |i: usize| digits(&rest[i..i + 2]).ok_or(SanError::Der(WHAT));
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return Err(SanError::Der(WHAT)),
    };
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return Err(SanError::Der(WHAT));
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// ASCII decimal digits as a number.
fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A cursor over DER TLVs.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn finish(&self, what: &'static str) -> Result<(), SanError> {
        match self.at_end() {
            true => Ok(()),
            false => Err(SanError::Der(what)),
        }
    }

    /// The next TLV's value, which must carry `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], SanError> {
        match self.any(what)? {
            (found, value) if found == tag => Ok(value),
            _ => Err(SanError::Der(what)),
        }
    }

    /// The next TLV: its tag and value.
    fn any(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), SanError> {
        let error = SanError::Der(what);
        let (&tag, rest) = self.rest.split_first().ok_or(error.clone())?;
        // High-tag-number form never occurs in a certificate.
        if tag & 0x1f == 0x1f {
            return Err(error);
        }
        let (&first, mut rest) = rest.split_first().ok_or(error.clone())?;
        let length = match first {
            0..=0x7f => usize::from(first),
            // Long form, at most 4 length bytes, minimal: no leading zero, and not for
            // lengths the short form can say. 0x80 (indefinite) is BER, not DER.
            0x81..=0x84 => {
                let count = usize::from(first & 0x7f);
                if rest.len() < count || rest[0] == 0 {
                    return Err(error);
                }
                let length = rest[..count]
                    .iter()
                    .fold(0usize, |n, &b| (n << 8) | usize::from(b));
                if length < 0x80 {
                    return Err(error);
                }
                rest = &rest[count..];
                length
            }
            _ => return Err(error),
        };
        if rest.len() < length {
            return Err(error);
        }
        let (value, rest) = rest.split_at(length);
        self.rest = rest;
        Ok((tag, value))
    }
}

#[cfg(test)]
mod tests;
