"""`python -m hdmap_train [overrides]`."""

from hdmap_train.train import main

if __name__ == "__main__":
    main()
