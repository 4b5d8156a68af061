from flatnet.cli import main

main()
