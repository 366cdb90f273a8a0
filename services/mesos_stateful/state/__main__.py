from mesos_stateful.state.main import main

main()
