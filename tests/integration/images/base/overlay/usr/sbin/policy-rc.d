#!/bin/sh
# No init system in a container: packages must not try to start their services while installing.
exit 101
