from sct.cli import main

raise SystemExit(main())
