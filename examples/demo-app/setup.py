from setuptools import find_packages, setup

setup(
    name="grocker-demo-app",
    version="0.3.0",
    description="Example application built into an image by setuptools-grocker.",
    package_dir={"": "src"},
    packages=find_packages("src"),
    python_requires=">=3.9",
    install_requires=["grocker-demo-lib>=1.0", "packaging>=21"],
    entry_points={
        "console_scripts": [
            "demo-app = grocker_demo_app.cli:main",
            "demo-app-server = grocker_demo_app.server:main",
        ],
    },
)
