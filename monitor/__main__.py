"""`python -m monitor` runs the gtmon command line."""

from monitor.cli import main

raise SystemExit(main())
