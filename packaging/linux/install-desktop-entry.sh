#!/bin/sh
# Add moshi-desktop to the desktop's application menu, for the current user:
#
#     install-desktop-entry.sh [PROGRAM]
#
# PROGRAM is the moshi-desktop program the menu entry starts: by default the bundle's program
# beside this script (dist/moshi-desktop/moshi-desktop: packaging/build.py copies the script
# there), else `moshi-desktop` on PATH (a pip install). Writes, under
# ${XDG_DATA_HOME:-~/.local/share}, applications/moshi-desktop.desktop (Exec= PROGRAM) and the
# icon into icons/hicolor/. Run it again after moving the bundle; delete those files to uninstall.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ -d "$here/_internal/app/resources" ]; then
    resources="$here/_internal/app/resources" # in the bundle
else
    resources="$here/../../resources" # in the repository
fi
if [ $# -ge 1 ]; then
    program=$1
elif [ -x "$here/moshi-desktop" ]; then
    program="$here/moshi-desktop"
else
    program=$(command -v moshi-desktop) || {
        echo "install-desktop-entry.sh: no moshi-desktop on PATH; give the program's path" >&2
        exit 2
    }
fi
case $program in
/*) ;;
*) program="$(cd "$(dirname "$program")" && pwd)/$(basename "$program")" ;;
esac
if [ ! -x "$program" ]; then
    echo "install-desktop-entry.sh: $program is not an executable program" >&2
    exit 2
fi

data=${XDG_DATA_HOME:-$HOME/.local/share}
mkdir -p "$data/applications" "$data/icons"
cp -R "$resources/icons/." "$data/icons/"
# Exec= holds the program in double quotes, escaped as the Desktop Entry specification asks:
# a backslash before " ` $ and \ inside the quotes, then every backslash doubled.
exec_line=$(printf '%s' "$program" | sed -e 's/\\/\\\\\\\\/g' -e 's/["`$]/\\\\&/g')
while IFS= read -r line; do
    case $line in
    Exec=*) printf 'Exec="%s"\n' "$exec_line" ;;
    *) printf '%s\n' "$line" ;;
    esac
done <"$resources/moshi-desktop.desktop" >"$data/applications/moshi-desktop.desktop"

# Desktops watch these folders: the entry shows in the menu at once (on some, after logging in).
echo "installed $data/applications/moshi-desktop.desktop (Exec=$program) and its icon"
