from atlasgen.cli import main

main()
