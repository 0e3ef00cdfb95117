"""The edge of a deployed service: a TCP relay from a host port to the service's healthy tasks.

    python3 edge.py PORT=SERVICE:TARGET [...]

Swarm's routing mesh publishes on every interface and needs IPVS; this relay runs in a plain
container published on the address the user chose (127.0.0.1 by default), on the service's
overlay network. Each connection resolves ``tasks.SERVICE`` (Swarm's DNS lists the tasks that
are running and healthy), starts with the next address in turn and falls through to the
others when one refuses, so a task that dies or is replaced costs no failed request.
Standard library only; it runs in the image that it serves.
"""
import asyncio
import itertools
import socket
import sys

CONNECT_TIMEOUT = 2.0
_turn = itertools.count()


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def backends(service, port):
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo("tasks." + service, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    addrs = sorted({info[4][0] for info in infos})
    if not addrs:
        return []
    start = next(_turn) % len(addrs)
    return addrs[start:] + addrs[:start]


async def relay(client_reader, client_writer, service, port):
    for _ in range(20):  # during a rollout the DNS answer can be empty for an instant
        for addr in await backends(service, port):
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                continue
            await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
            return
        await asyncio.sleep(0.25)
    sys.stdout.write("edge: no healthy task of %s answers on port %d\n" % (service, port))
    sys.stdout.flush()
    client_writer.close()


async def main(routes):
    servers = []
    for route in routes:
        listen, _, target = route.partition("=")
        service, _, port = target.rpartition(":")

        async def handle(r, w, service=service, port=int(port)):
            await relay(r, w, service, port)

        servers.append(await asyncio.start_server(handle, "0.0.0.0", int(listen)))
        sys.stdout.write("edge: port %s -> tasks.%s:%s\n" % (listen, service, port))
    sys.stdout.flush()
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
