from verifier.cli import main

main(prog_name="golf-verify")
