"""flit app"""
__version__ = "0.4.0"

def main():
    print("flit-app works")
