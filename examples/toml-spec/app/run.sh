#!/bin/sh
cat /app/motd
