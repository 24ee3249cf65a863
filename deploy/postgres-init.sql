-- Each extracted service has a database of its own (the catalog uses the default one, banyan).
CREATE DATABASE auth OWNER banyan;
CREATE DATABASE search OWNER banyan;
CREATE DATABASE analytics OWNER banyan;
