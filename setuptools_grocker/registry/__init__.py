"""Everything grocker publishes, over HTTP, with no Docker Engine involved.

    client.py      the registry HTTP API: credentials (401 -> Basic or Bearer), digests, blob-by-blob push, retag
    blobcache.py   the local cache of gzipped layer blobs and image configs that a push uploads
    release.py     a workspace release: one immutable release document, then the ``latest`` pointer
    wheelhouse.py  where built wheels are shared: the local store and an optional PEP 503 wheel index

Nothing here imports the pipelines; the pipelines call in.
"""
