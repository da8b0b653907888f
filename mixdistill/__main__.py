from mixdistill.cli import main

main()
