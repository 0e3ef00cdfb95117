def main():
    print("hatch-app works")
