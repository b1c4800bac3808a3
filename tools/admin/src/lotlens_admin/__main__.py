"""`python -m lotlens_admin` runs the same command as `lotlens-admin`."""

from lotlens_admin.cli import main

raise SystemExit(main())
