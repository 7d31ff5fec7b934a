from packager.cli import pack_main

pack_main()
