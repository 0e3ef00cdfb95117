"""The edge of a deployed service: a TCP relay from a host port to the service's healthy tasks.

    python3 edge.py [ADDRESS:]PORT=NAME:TARGET [...]

Swarm's routing mesh publishes on every interface and needs IPVS; this relay runs in a plain
container published on the address the user chose (127.0.0.1 by default), on the service's
overlay network. It listens on ADDRESS:PORT (ADDRESS defaults to 0.0.0.0, inside the
container). Each connection resolves NAME (``tasks.SERVICE``: Swarm's DNS lists the tasks that
are running and healthy), starts with the next address in turn and falls through to the
others when one refuses, so a task that dies or is replaced costs no failed request.

A half-close is passed on, not turned into a close: when one side shuts down its write side,
the relay shuts down the write side towards the other and keeps relaying the other direction
until it ends too (a client that sends its request then ``shutdown(SHUT_WR)`` gets its answer).
It runs under tini (see deploy/deployer.py), so ``docker stop`` ends it at once.
Standard library only; it runs in the image that it serves.
"""
import asyncio
import itertools
import socket
import sys

CONNECT_TIMEOUT = 2.0
_turn = itertools.count()


async def pipe(reader, writer):
    """Copy until EOF, then shut down the writer's side only: the other direction goes on."""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def splice(client_reader, client_writer, reader, writer):
    """Both directions until both have ended; a reset or error on either side ends both."""
    try:
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (writer, client_writer):
            try:
                w.close()
            except Exception:
                pass


async def backends(name, port):
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    addrs = sorted({info[4][0] for info in infos})
    if not addrs:
        return []
    start = next(_turn) % len(addrs)
    return addrs[start:] + addrs[:start]


async def relay(client_reader, client_writer, name, port):
    for _ in range(20):  # during a rollout the DNS answer can be empty for an instant
        for addr in await backends(name, port):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                continue
            await splice(client_reader, client_writer, reader, writer)
            return
        await asyncio.sleep(0.25)
    sys.stdout.write("edge: no healthy task of %s answers on port %d\n" % (name, port))
    sys.stdout.flush()
    client_writer.close()


def parse_route(route):
    """``[ADDRESS:]PORT=NAME:TARGET`` -> (address, port, name, target)."""
    listen, _, target = route.partition("=")
    address, _, listen_port = listen.rpartition(":")
    name, _, target_port = target.rpartition(":")
    return address or "0.0.0.0", int(listen_port), name, int(target_port)


async def main(routes):
    servers = []
    for route in routes:
        address, listen_port, name, port = parse_route(route)

        async def handle(r, w, name=name, port=port):
            await relay(r, w, name, port)

        servers.append(await asyncio.start_server(handle, address, listen_port))
        sys.stdout.write("edge: %s:%d -> %s:%d\n" % (address, listen_port, name, port))
    sys.stdout.flush()
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
