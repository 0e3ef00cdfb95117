from setuptools import Extension, setup

setup(ext_modules=[Extension("bad_ext", ["src/bad_ext.c"])])
