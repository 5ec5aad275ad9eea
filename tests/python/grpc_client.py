"""gRPC client for grpc_server.py: calls Say, Stream (with --count) and Fail, prints JSON."""

import argparse
import json

import grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target", help="host:port")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    result = {}
    with grpc.insecure_channel(args.target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        say = channel.unary_unary("/echo.Echo/Say")
        reply, call = say.with_call(b"hello", timeout=args.timeout)
        result["unary"] = reply.decode()
        result["unary_code"] = call.code().name
        result["unary_trailers"] = dict(call.trailing_metadata() or ())

        stream = channel.unary_stream("/echo.Echo/Stream")
        responses = stream(str(args.count).encode(), timeout=args.timeout)
        messages = [m.decode() for m in responses]
        result["stream_count"] = len(messages)
        result["stream_first"] = messages[0] if messages else None
        result["stream_last"] = messages[-1] if messages else None
        result["stream_code"] = responses.code().name
        result["stream_trailers"] = dict(responses.trailing_metadata() or ())

        fail = channel.unary_unary("/echo.Echo/Fail")
        try:
            fail(b"x", timeout=args.timeout)
            result["fail_code"] = "OK"
        except grpc.RpcError as e:
            result["fail_code"] = e.code().name
            result["fail_details"] = e.details()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
