"""WebSocket echo server (websockets): every message comes back unchanged."""

import argparse
import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    sys.stderr.write("websocket connection, path %s\n" % ws.request.path)
    async for message in ws:
        await ws.send(message)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    async with serve(echo, "0.0.0.0", args.port, max_size=None):
        sys.stderr.write("websocket listening on %d\n" % args.port)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
