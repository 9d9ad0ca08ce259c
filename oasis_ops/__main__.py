from oasis_ops.cli import main

raise SystemExit(main())
