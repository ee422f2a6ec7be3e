from astara.agent.main import main

main()
