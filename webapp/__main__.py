"""`python -m webapp`: serve Tributary's web process (see webapp/server.py)."""

from gevent import monkey

monkey.patch_all()  # before anything else imports socket, ssl or threading

import sys  # noqa: E402

from webapp.server import main  # noqa: E402

sys.exit(main())
