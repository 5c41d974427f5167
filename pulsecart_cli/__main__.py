from pulsecart_cli.console import main

main()
