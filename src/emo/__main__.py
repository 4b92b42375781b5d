from emo.cli import main

main()
