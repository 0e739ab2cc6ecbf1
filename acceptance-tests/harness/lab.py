"""The Rust lab (`castle-lab`) driven from tests: start a service, talk to its /__lab/ controls."""

import json
import os
import subprocess
import urllib.request

from harness.terraform import provider_dir


def lab_binary():
    return os.path.join(provider_dir(), 'castle-lab')


class InfisicalLab(object):
    """`castle-lab infisical` on a free loopback port, with its fixed test identity."""

    client_id = 'castle-lab-client'
    client_secret = 'castle-lab-secret'
    project_id = 'castle-lab-project'
    environment = 'dev'

    def __init__(self, host='127.0.0.1', token_ttl=None):
        args = [lab_binary(), 'infisical', '--listen', '%s:0' % host]
        if token_ttl:
            args += ['--token-ttl', str(token_ttl)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if 'listening on' not in line:
            self.proc.kill()
            raise RuntimeError('castle-lab infisical did not start: %r' % line)
        self.url = line.rsplit(' ', 1)[-1]

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def secrets(self):
        return self._call('GET', '/__lab/secrets')['secrets']

    def set_secret(self, path, key, value, environment=None):
        self._call('PUT', '/__lab/secrets', {'environment': environment or self.environment, 'path': path,
                                             'key': key, 'value': value})

    def delete_secret(self, path, key, environment=None):
        self._call('DELETE', '/__lab/secrets', {'environment': environment or self.environment, 'path': path,
                                                'key': key})

    def rate_limit(self, count, retry_after=1):
        self._call('POST', '/__lab/rate-limit', {'count': count, 'retry_after': retry_after})

    def expire_tokens(self):
        self._call('POST', '/__lab/expire-tokens')

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
