from cniscope.cli import main

raise SystemExit(main())
