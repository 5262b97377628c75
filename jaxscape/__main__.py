from jaxscape.cli import main

raise SystemExit(main())
