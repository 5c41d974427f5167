from pulsecart_cli.cli import main

main()
