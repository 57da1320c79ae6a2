from shd.cli import main

raise SystemExit(main())
