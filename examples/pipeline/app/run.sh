#!/bin/sh
echo "app on port ${PORT}: $(greet)"
