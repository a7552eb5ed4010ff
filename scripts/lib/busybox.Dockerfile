# busybox:latest for machines that cannot pull: Debian's statically linked
# busybox (package busybox-static) on an empty base. Built by scripts/setup-host,
# which copies /bin/busybox into the build context next to this file.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /root /etc /www /usr/bin /sbin /usr/sbin \
 && chmod 1777 /tmp \
 && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd \
 && echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >> /etc/passwd \
 && echo 'root:x:0:' > /etc/group \
 && echo 'nogroup:x:65534:' >> /etc/group
SHELL ["/bin/sh", "-c"]
CMD ["sh"]
