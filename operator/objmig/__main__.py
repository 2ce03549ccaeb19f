"""`python -m objmig`: the `objmig` command."""

from objmig.cli.main import main

main()
