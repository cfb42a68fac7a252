"""`python -m catbreed_desktop [PATH...]`: open the window."""

import sys

from catbreed_desktop.gui.app import main

sys.exit(main())
