from setuptools import Extension, setup

# The extension links libyaml: building needs libyaml-dev (system-packages.build),
# importing needs libyaml-0-2 (system-packages.run).
setup(ext_modules=[Extension("grocker_demo_lib._yamlver", ["src/grocker_demo_lib/_yamlver.c"], libraries=["yaml"])])
