# Nothing to generate or package in the stand-in.
