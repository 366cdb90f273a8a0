from mesos_stateful.gateway.main import main

main()
