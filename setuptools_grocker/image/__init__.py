"""What an image is made of, and how grocker makes one.

    recipes.py    the root and compiler images (small Dockerfiles tagged by a hash of their inputs), runtime labels
    assemble.py   the runtime image without a container: reproducible layers written from the wheels, ``docker load``
    bootstrap.py  ``grocker bootstrap-base``: a reproducible minimal Debian base image (mmdebstrap)
    diff.py       ``grocker diff A B``: what changed between two images, from the distributions they record
    records.py    build records: when and from what each runtime image was built (``grocker images``)
    gc.py         ``grocker gc``: superseded and failed images, unused root/compiler images, caches beyond a size

The scripts that run inside these images (entrypoint, compile driver) are package data in
``setuptools_grocker/resources/``.
"""
