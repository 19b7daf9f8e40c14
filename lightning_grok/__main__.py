from lightning_grok.cli import main

raise SystemExit(main())
