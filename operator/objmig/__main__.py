from objmig.cli.main import main

main()
