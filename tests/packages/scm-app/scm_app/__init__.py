from importlib.metadata import version


def main():
    print("scm-app", version("scm-app"))
