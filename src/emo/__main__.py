from emo.commands import main

main()
