"""The Flask extension and everything its sockets need.

from streambridge import StreamBridge
sb = StreamBridge(app, user_loader=...)
"""
