"""A minimal h2c (HTTP/2 with prior knowledge, no TLS) server using the `h2` package.

It speaks only HTTP/2: a response proves the request arrived as HTTP/2. Each response is JSON
naming the protocol, method, :authority, :path and the request body size.
"""

import argparse
import json
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def respond(conn, stream_id, request, name):
    body = json.dumps(
        {
            "proto": "HTTP/2",
            "server": name,
            "method": request["headers"].get(":method"),
            "path": request["headers"].get(":path"),
            "authority": request["headers"].get(":authority"),
            "body_bytes": request["body"],
        }
    ).encode() + b"\n"
    conn.send_headers(
        stream_id,
        [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("x-served-by", name),
        ],
    )
    conn.send_data(stream_id, body, end_stream=True)


def serve(sock, name):
    config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    requests = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    requests[event.stream_id] = {"headers": dict(event.headers), "body": 0}
                elif isinstance(event, h2.events.DataReceived):
                    requests[event.stream_id]["body"] += len(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    respond(conn, event.stream_id, requests.pop(event.stream_id), name)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    sock.sendall(conn.data_to_send())
                    return
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except Exception as e:  # a broken client must not kill the server
        sys.stderr.write("connection error: %r\n" % (e,))
    finally:
        sock.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="h2-server")
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", args.port))
    listener.listen(128)
    sys.stderr.write("h2c listening on %d\n" % args.port)
    while True:
        sock, peer = listener.accept()
        sys.stderr.write("connection from %s:%d\n" % peer)
        threading.Thread(target=serve, args=(sock, args.name), daemon=True).start()


if __name__ == "__main__":
    main()
