from rvlm.cli.main import main

main()
