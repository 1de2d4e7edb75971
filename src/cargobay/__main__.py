from cargobay.cli import main

main()
