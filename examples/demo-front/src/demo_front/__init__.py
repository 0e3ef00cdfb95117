def main():
    print("demo-front API")
