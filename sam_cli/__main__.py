from sam_cli.cli.app import main

main()
