"""`python -m wpcompare`: the same command line as the `wpcompare` script."""
from wpcompare.cli import main

if __name__ == "__main__":
    main(prog_name="wpcompare")
