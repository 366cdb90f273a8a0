from mesos_stateful.offers.main import main

main()
