#!/usr/bin/python3
# The demo app (runs inside `porthole run`): asks for a file through the
# FileChooser portal, the way GTK and libportal do (subscribe to Response on
# the predicted request path, call OpenFile with a handle_token), then reads
# the file at the path the portal answered, inside its sandbox.
import sys
import urllib.parse

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.SessionBus()
portal = bus.get_object("org.freedesktop.portal.Desktop", "/org/freedesktop/portal/desktop")
token = "porthole_demo"
path = "/org/freedesktop/portal/desktop/request/%s/%s" % (
    bus.get_unique_name()[1:].replace(".", "_"), token)
loop = GLib.MainLoop()
answer = {}


def on_response(code, results):
    answer["code"] = int(code)
    answer["uris"] = [str(u) for u in results.get("uris", [])]
    loop.quit()


bus.add_signal_receiver(on_response, signal_name="Response",
                        dbus_interface="org.freedesktop.portal.Request", path=path)
print("app: FileChooser.OpenFile(handle_token=%s)" % token, flush=True)
portal.OpenFile("", "Open a report", {"handle_token": token},
                dbus_interface="org.freedesktop.portal.FileChooser")
GLib.timeout_add(300_000, loop.quit)
loop.run()
if answer.get("code") != 0:
    print("app: no file (response %s)" % answer.get("code"), flush=True)
    sys.exit(1)
for uri in answer["uris"]:
    local = urllib.parse.unquote(urllib.parse.urlparse(uri).path)
    print("app: got %s" % uri, flush=True)
    with open(local) as f:
        print("app: read %r" % f.read(), flush=True)
    doc_dir = local.rsplit("/", 2)[0]
    print("app: %s holds only %s" % (doc_dir, sorted(__import__("os").listdir(doc_dir))), flush=True)
