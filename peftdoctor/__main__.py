from peftdoctor.cli import main

main()
