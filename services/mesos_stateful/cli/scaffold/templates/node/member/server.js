'use strict';
// The placeholder member: serves the files of its sandbox over HTTP. node server.js PORT HOST
const http = require('http');
const fs = require('fs');
const path = require('path');

const [port, host] = process.argv.slice(2);
http
  .createServer((req, res) => {
    const file = path.join(__dirname, path.normalize(decodeURIComponent(req.url.split('?')[0])).replace(/^(\.\.[/\\])+/, ''));
    fs.readFile(file, (error, data) => {
      res.writeHead(error ? 404 : 200);
      res.end(error ? 'not found' : data);
    });
  })
  .listen(Number(port), host);
process.on('SIGTERM', () => process.exit(0));
