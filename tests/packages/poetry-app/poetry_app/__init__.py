def main():
    print("poetry-app works")
